<?php
// error_log() goes to FCGI_STDERR under PHP-FPM.
error_log('fcgibridge test: something to log');
echo "logged";

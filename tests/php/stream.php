<?php
// A streamed response: a first part, flush(), a pause, the rest.
header('X-Accel-Buffering: no');
echo "first part\n";
flush();
usleep(intval($_GET['ms'] ?? 700) * 1000);
echo "second part\n";

<?php
// GET /hello: the 13-byte Hello, World! (as bench/apps.py answers it).
header('Content-Type: text/plain');
header('Content-Length: 13');
echo 'Hello, World!';

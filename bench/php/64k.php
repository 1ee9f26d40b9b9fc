<?php
// GET /64k: 64 KiB of a repeating 0123456789abcdef, in one piece (as bench/apps.py answers it).
$body = str_repeat('0123456789abcdef', 4096);
header('Content-Type: application/octet-stream');
header('Content-Length: ' . strlen($body));
echo $body;

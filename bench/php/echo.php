<?php
// POST /echo: the request body read whole, then sent back (as bench/apps.py answers it).
$body = file_get_contents('php://input');
header('Content-Type: application/octet-stream');
header('Content-Length: ' . strlen($body));
echo $body;

<?php
// A large response: $_GET['mb'] MiB (default 16) of a repeating pattern.
header('Content-Type: application/octet-stream');
$block = str_repeat('0123456789abcdef', 4096);  // 64 KiB
$count = intval($_GET['mb'] ?? 16) * 16;
for ($i = 0; $i < $count; $i++) {
    echo $block;
}

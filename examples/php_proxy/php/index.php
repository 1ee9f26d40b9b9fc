<?php
// A small PHP app (one front controller) mounted in Starlette by app.py.
$path = $_SERVER['PATH_INFO'] ?? parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if ($path === '/hello') {
    header('Content-Type: text/plain');
    echo 'Hello from PHP ' . PHP_MAJOR_VERSION . ', ' . ($_GET['name'] ?? 'world');
} elseif ($path === '/form' && $_SERVER['REQUEST_METHOD'] === 'POST') {
    header('Content-Type: text/plain');
    echo 'posted ' . ($_POST['name'] ?? '?');
} elseif ($path === '/upload') {
    $body = file_get_contents('php://input');
    echo strlen($body) . ' ' . hash('sha256', $body);
} elseif ($path === '/go') {
    header('Location: /hello');
} elseif ($path === '/big') {
    $block = str_repeat('x', 65536);
    for ($i = 0; $i < 64; $i++) {
        echo $block;
    }
} elseif ($path === '/slow') {
    sleep(3);
    echo 'late';
} else {
    http_response_code(404);
    header('Content-Type: text/plain');
    echo 'no page at ' . $path;
}

<?php
// Echoes what PHP saw of the request, as JSON.
header('Content-Type: application/json');
header('X-Repeat: one');
header('X-Repeat: two', false);
$body = file_get_contents('php://input');
echo json_encode([
    'method' => $_SERVER['REQUEST_METHOD'],
    'uri' => $_SERVER['REQUEST_URI'] ?? null,
    'query' => $_GET,
    'post' => $_POST,
    'script' => $_SERVER['SCRIPT_FILENAME'] ?? null,
    'script_name' => $_SERVER['SCRIPT_NAME'] ?? null,
    'path_info' => $_SERVER['PATH_INFO'] ?? null,
    'token' => $_SERVER['HTTP_X_TOKEN'] ?? null,
    'content_type' => $_SERVER['CONTENT_TYPE'] ?? null,
    'length' => strlen($body),
    'sha256' => hash('sha256', $body),
    'pid' => getmypid(),
]);

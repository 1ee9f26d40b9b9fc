<?php
// The CGI variables PHP got (the HTTP_* ones and those a web server sets) as JSON,
// two headers of the same name back, and a line on FCGI_STDERR.
header('Content-Type: application/json');
header('X-Repeat: one');
header('X-Repeat: two', false);
error_log('vars.php: ' . $_SERVER['REQUEST_URI']);
$names = ['REQUEST_METHOD', 'REQUEST_URI', 'QUERY_STRING', 'SCRIPT_NAME', 'SCRIPT_FILENAME', 'PATH_INFO',
          'DOCUMENT_ROOT', 'SERVER_NAME', 'SERVER_PORT', 'HTTPS', 'REQUEST_SCHEME', 'REMOTE_ADDR',
          'CONTENT_TYPE', 'CONTENT_LENGTH'];
$vars = [];
foreach ($_SERVER as $name => $value) {
    if (in_array($name, $names, true) || strncmp($name, 'HTTP_', 5) === 0) {
        $vars[$name] = $value;
    }
}
echo json_encode(['vars' => $vars, 'get' => $_GET]);

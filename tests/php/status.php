<?php
// A status code from ?code=, or a redirect with ?to=.
if (isset($_GET['to'])) {
    header('Location: ' . $_GET['to']);
    exit;
}
http_response_code(intval($_GET['code'] ?? 200));
echo "status";

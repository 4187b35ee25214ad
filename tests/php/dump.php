<?php
// Differential-test fixture: everything a PHP app learns about its request, as JSON.
// A `server` key that is not set is reported as null (distinct from "").
header('Content-Type: application/json');

$selected = [
    'REQUEST_METHOD', 'REQUEST_URI', 'QUERY_STRING', 'SCRIPT_NAME', 'SCRIPT_FILENAME',
    'PATH_INFO', 'PATH_TRANSLATED', 'PHP_SELF', 'DOCUMENT_ROOT', 'DOCUMENT_URI',
    'CONTENT_TYPE', 'CONTENT_LENGTH', 'SERVER_PROTOCOL', 'GATEWAY_INTERFACE',
    'REQUEST_SCHEME', 'HTTPS', 'REDIRECT_STATUS', 'SERVER_NAME', 'SERVER_PORT',
    'SERVER_ADDR', 'REMOTE_ADDR', 'HTTP_HOST', 'PHP_AUTH_USER', 'PHP_AUTH_PW',
];
$server = [];
foreach ($selected as $key) {
    $server[$key] = array_key_exists($key, $_SERVER) ? $_SERVER[$key] : null;
}

$http = [];
foreach ($_SERVER as $key => $value) {
    if (strncmp($key, 'HTTP_', 5) === 0) {
        $http[$key] = $value;
    }
}
ksort($http);

// One entry per uploaded file; `name[]`-style fields are flattened to "field[index]".
function describe_files(array $files): array
{
    $out = [];
    foreach ($files as $field => $f) {
        if (is_array($f['name'])) {
            foreach (array_keys($f['name']) as $i) {
                $out += describe_files([$field . '[' . $i . ']' => [
                    'name' => $f['name'][$i],
                    'full_path' => $f['full_path'][$i] ?? null,
                    'type' => $f['type'][$i],
                    'size' => $f['size'][$i],
                    'error' => $f['error'][$i],
                    'tmp_name' => $f['tmp_name'][$i],
                ]]);
            }
            continue;
        }
        $ok = $f['error'] === UPLOAD_ERR_OK && is_uploaded_file($f['tmp_name']);
        $out[$field] = [
            'name' => $f['name'],
            'full_path' => $f['full_path'] ?? null,
            'type' => $f['type'],
            'size' => $f['size'],
            'error' => $f['error'],
            'md5' => $ok ? md5_file($f['tmp_name']) : null,
        ];
    }
    return $out;
}

$input = file_get_contents('php://input');

$headers = null;
if (function_exists('getallheaders')) {
    $headers = [];
    foreach (getallheaders() as $name => $value) {
        $headers[strtolower($name)] = $value;
    }
    ksort($headers);
}

echo json_encode([
    'server' => $server,
    'http' => (object) $http,
    'get' => (object) $_GET,
    'post' => (object) $_POST,
    'cookie' => (object) $_COOKIE,
    'files' => (object) describe_files($_FILES),
    'input' => ['length' => strlen($input), 'md5' => md5($input)],
    'headers' => $headers === null ? null : (object) $headers,
], JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE | JSON_PRETTY_PRINT), "\n";

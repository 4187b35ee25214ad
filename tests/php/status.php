<?php
// Answers with the status code given as ?code= (default 200).
$code = (int) ($_GET['code'] ?? 200);
http_response_code($code);
header('Content-Type: text/plain; charset=utf-8');
echo "status $code\n";

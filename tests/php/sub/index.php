<?php
header('Content-Type: text/plain; charset=utf-8');
echo "sub/index.php\n";
echo 'SCRIPT_NAME=', $_SERVER['SCRIPT_NAME'] ?? '', "\n";
echo 'REQUEST_URI=', $_SERVER['REQUEST_URI'] ?? '', "\n";
echo 'QUERY_STRING=', $_SERVER['QUERY_STRING'] ?? '', "\n";

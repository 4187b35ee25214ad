<?php
// Several Set-Cookie headers with attributes; all deterministic (no Max-Age that moves with time).
setcookie('plain', '1');
setcookie('session', 'two words&more', [
    'path' => '/',
    'secure' => false,
    'httponly' => true,
    'samesite' => 'Lax',
]);
setcookie('old', '', 1, '/');
header('Content-Type: text/plain; charset=utf-8');
echo "cookies set\n";

<?php
// Custom headers, a removed header, a repeated header and Cache-Control set by the script.
header('X-Custom: one');
header('X-Replaced: first');
header('X-Replaced: second');
header('X-Removed: should not be sent');
header_remove('X-Removed');
header('X-Multi: a');
header('X-Multi: b', false);
header('Cache-Control: no-store, max-age=0');
header('Content-Type: text/plain; charset=utf-8');
echo "headers\n";

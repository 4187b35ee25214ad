<?php
// Streams two lines one second apart. X-Accel-Buffering tells nginx not to buffer.
header('Content-Type: text/plain; charset=utf-8');
header('X-Accel-Buffering: no');
echo "first\n";
while (ob_get_level() > 0) {
    ob_end_flush();
}
flush();
sleep(1);
echo "second\n";

<?php
// Exhausts memory_limit (lowered here so the test is fast and independent of php.ini).
ini_set('memory_limit', '32M');
$chunks = [];
while (true) {
    $chunks[] = str_repeat('x', 1 << 20);
}

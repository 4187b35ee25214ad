<?php
// Sleeps ?s= seconds (default 2), then answers.
$s = (float) ($_GET['s'] ?? 2);
usleep((int) ($s * 1000000));
header('Content-Type: text/plain; charset=utf-8');
echo "slept $s\n";

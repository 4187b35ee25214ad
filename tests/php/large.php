<?php
// ~2 MiB of deterministic text: 32768 lines of 64 bytes.
header('Content-Type: text/plain; charset=utf-8');
for ($i = 0; $i < 32768; $i++) {
    printf("%08d %s\n", $i, substr(str_repeat(md5((string) $i), 2), 0, 54));
}

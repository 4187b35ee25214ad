<?php
// The "mixed" scenario's waiting request (1 in 20): 50 ms spent waiting, as on a
// database query, with the CPU idle.
usleep(50000);
echo "slow\n";

<?php
// The "mixed" scenario's instant request (19 in 20).
echo "fast\n";

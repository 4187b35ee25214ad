<?php
// Location without an explicit status: PHP turns the response into a 302.
header('Location: /dump.php?from=redirect');
echo "redirecting\n";

<?php
// Fatal error: undefined function.
this_function_does_not_exist();
echo "unreachable\n";

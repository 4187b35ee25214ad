<?php
// Uncaught exception.
throw new RuntimeException('uncaught in fixture');

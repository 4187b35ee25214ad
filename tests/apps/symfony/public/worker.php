<?php
// The worker script: the kernel boots once, then serves request after request
// (the loop of FrankenPHP's worker documentation; it runs unchanged on fe-php).
use App\Kernel;
use Symfony\Component\HttpFoundation\Request;

ignore_user_abort(true);
require \dirname(__DIR__) . '/bootstrap.php';

$kernel = new Kernel('prod', false);
$kernel->boot();

$handler = static function () use ($kernel) {
    $request = Request::createFromGlobals();
    $response = $kernel->handle($request);
    $response->send();
    $kernel->terminate($request, $response);
};

while (frankenphp_handle_request($handler)) {
    gc_collect_cycles();
}

<?php
// The worker script: the application boots once, then serves request after
// request (the loop of FrankenPHP's worker documentation).
//
// Laravel keeps some per-request state in long-lived container singletons, so
// before each request we reset it, as Laravel Octane does:
//  - the session store: one Store object (attributes and id) is shared by the
//    session manager, `session.store`, the StartSession middleware and the
//    redirector, and Store::start() *merges* what it reads from the handler
//    into the attributes it already holds, so without a flush the previous
//    client's session data would show up in the next client's session;
//  - the cookie jar's queue: AddQueuedCookiesToResponse adds the queued
//    cookies to the response but never empties the queue;
//  - the `errors` the view factory shares: ShareErrorsFromSession sets it only
//    on `web` routes, so a view rendered outside that group (e.g. the 404
//    page) would see the previous client's validation errors.
// The request itself needs nothing: the kernel rebinds `request` (and the URL
// generator follows it) on each handle().
use Illuminate\Contracts\Http\Kernel;
use Illuminate\Http\Request;
use Illuminate\Support\ViewErrorBag;

ignore_user_abort(true);

$app = require dirname(__DIR__) . '/bootstrap/app.php';
$kernel = $app->make(Kernel::class);
$kernel->bootstrap();

$handler = static function () use ($app, $kernel) {
    if ($app->resolved('session')) {
        $session = $app['session']->driver();
        $session->flush();
        $session->regenerate();
    }
    if ($app->resolved('cookie')) {
        $app['cookie']->flushQueuedCookies();
    }
    if ($app->resolved('view')) {
        $app['view']->share('errors', new ViewErrorBag());
    }

    $request = Request::capture();
    $response = $kernel->handle($request);
    $response->send();
    $kernel->terminate($request, $response);
};

while (frankenphp_handle_request($handler)) {
    gc_collect_cycles();
}

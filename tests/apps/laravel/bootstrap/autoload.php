<?php
// Laravel 8 as Debian packages it (php-laravel-framework): its autoloader
// under /usr/share/php (which in turn loads the Illuminate components and the
// libraries they need: Symfony, Carbon, Monolog, Dotenv...), then the app's
// own classes (App\ in app/).
require_once '/usr/share/php/Illuminate/autoload.php';

spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'App\\')) {
        $file = dirname(__DIR__) . '/app/' . str_replace('\\', '/', substr($class, 4)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});

<?php
// Symfony 5.4 and Twig as Debian packages them (php-symfony-framework-bundle,
// php-symfony-twig-bundle): their autoloaders under /usr/share/php, then the
// app's own classes (App\ in src/).
require_once '/usr/share/php/Symfony/Bundle/FrameworkBundle/autoload.php';
require_once '/usr/share/php/Symfony/Bundle/TwigBundle/autoload.php';

spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'App\\')) {
        require __DIR__ . '/src/' . str_replace('\\', '/', substr($class, 4)) . '.php';
    }
});

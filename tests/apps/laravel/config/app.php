<?php

return [
    'name' => 'fe-php-laravel',
    'env' => 'production',
    'debug' => false,
    'url' => 'http://localhost',
    'timezone' => 'UTC',
    'locale' => 'en',
    'fallback_locale' => 'en',

    // A fixed key (a test application: the key is public), 32 bytes.
    'key' => 'base64:ZmUtcGhwLWxhcmF2ZWwtdGVzdC1rZXktMzItYnl0ZXM=',
    'cipher' => 'AES-256-CBC',

    'providers' => [
        Illuminate\Cookie\CookieServiceProvider::class,
        Illuminate\Encryption\EncryptionServiceProvider::class,
        Illuminate\Filesystem\FilesystemServiceProvider::class,
        Illuminate\Session\SessionServiceProvider::class,
        Illuminate\Translation\TranslationServiceProvider::class,
        Illuminate\View\ViewServiceProvider::class,
        App\Providers\RouteServiceProvider::class,
    ],

    'aliases' => [],
];

<?php

namespace App\Exceptions;

use Illuminate\Foundation\Exceptions\Handler as ExceptionHandler;

final class Handler extends ExceptionHandler
{
    /** Inputs never flashed to the session on validation errors. */
    protected $dontFlash = ['password', 'password_confirmation'];
}

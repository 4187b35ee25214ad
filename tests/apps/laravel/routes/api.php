<?php

use App\Http\Controllers\Pages;
use Illuminate\Support\Facades\Route;

Route::get('/items', [Pages::class, 'items']);

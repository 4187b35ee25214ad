<?php

use App\Http\Controllers\Pages;
use Illuminate\Support\Facades\Route;

Route::get('/page/{name}', [Pages::class, 'page']);
Route::get('/visit', [Pages::class, 'visit']);

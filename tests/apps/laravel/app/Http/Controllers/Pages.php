<?php

namespace App\Http\Controllers;

use Illuminate\Http\JsonResponse;
use Illuminate\Http\Request;
use Illuminate\Routing\Controller;

/** A small Laravel application: an HTML page from a Blade template, a JSON
 * endpoint and a page that uses the session. */
final class Pages extends Controller
{
    /** An HTML page rendered from a template. */
    public function page(Request $request, string $name)
    {
        return view('page', [
            'name' => $name,
            'query' => (string) $request->query('q', ''),
            'items' => self::items_of($name, 20),
        ]);
    }

    /** A JSON endpoint. */
    public function items(Request $request): JsonResponse
    {
        $n = max(1, min(100, (int) $request->query('n', 10)));
        return new JsonResponse(['count' => $n, 'items' => self::items_of('api', $n)]);
    }

    /** The session: what this client stored before, and what it stores now. */
    public function visit(Request $request): JsonResponse
    {
        $session = $request->session();
        $before = $session->get('name');
        if ($request->query->has('name')) {
            $session->put('name', (string) $request->query('name'));
        }
        return new JsonResponse(['before' => $before, 'now' => $session->get('name')]);
    }

    private static function items_of(string $name, int $n): array
    {
        $items = [];
        for ($i = 1; $i <= $n; $i++) {
            $items[] = ['id' => $i, 'title' => "Item $i of $name", 'price' => round($i * 1.25, 2)];
        }
        return $items;
    }
}

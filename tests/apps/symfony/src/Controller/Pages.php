<?php

namespace App\Controller;

use Symfony\Component\HttpFoundation\JsonResponse;
use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\HttpFoundation\Response;
use Twig\Environment;

final class Pages
{
    public function __construct(private Environment $twig)
    {
    }

    /** An HTML page rendered from a template. */
    public function page(string $name, Request $request): Response
    {
        return new Response($this->twig->render('page.html.twig', [
            'name' => $name,
            'query' => $request->query->get('q', ''),
            'items' => self::items_of($name, 20),
        ]));
    }

    /** A JSON endpoint. */
    public function items(Request $request): JsonResponse
    {
        $n = max(1, min(100, $request->query->getInt('n', 10)));
        return new JsonResponse(['count' => $n, 'items' => self::items_of('api', $n)]);
    }

    /** The session: what this client stored before, and what it stores now. */
    public function visit(Request $request): JsonResponse
    {
        $session = $request->getSession();
        $before = $session->get('name');
        if ($request->query->has('name')) {
            $session->set('name', $request->query->get('name'));
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

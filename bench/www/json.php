<?php
// A small API response: 50 items, json_encode.
header('Content-Type: application/json');
$items = [];
for ($i = 0; $i < 50; $i++) {
    $items[] = ['id' => $i, 'name' => "Item $i", 'price' => round($i * 1.25, 2), 'tags' => ['new', 'sale'], 'stock' => $i % 7 !== 0];
}
echo json_encode(['count' => count($items), 'items' => $items]);

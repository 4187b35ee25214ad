<?php
// A 50-item JSON API page (the benchmark's "json" workload).
header('Content-Type: application/json');
$items = [];
for ($i = 1; $i <= 50; $i++) {
    $items[] = [
        'id' => $i,
        'name' => "Item $i",
        'price' => round($i * 1.25, 2),
        'tags' => ['alpha', 'beta', $i % 2 ? 'odd' : 'even'],
        'active' => $i % 3 !== 0,
    ];
}
echo json_encode(['count' => count($items), 'items' => $items]);

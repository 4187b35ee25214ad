<?php
// A heavier page: a template rendering 200 rows with htmlspecialchars.
$rows = [];
for ($i = 0; $i < 200; $i++) {
    $rows[] = ['id' => $i, 'name' => "Product <$i> & \"friends\"", 'email' => "user$i@example.com", 'note' => str_repeat('lorem ', $i % 5 + 1)];
}
?><!doctype html>
<html><head><meta charset="utf-8"><title>Products</title></head>
<body><table>
<?php foreach ($rows as $r): ?>
<tr><td><?= $r['id'] ?></td><td><?= htmlspecialchars($r['name']) ?></td><td><?= htmlspecialchars($r['email']) ?></td><td><?= htmlspecialchars($r['note']) ?></td></tr>
<?php endforeach; ?>
</table></body></html>

<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{{ ucwords($name) }} — fe-php</title></head>
<body>
<h1>Hello {{ $name }}</h1>
@if ($query !== '')<p>You searched for <em>{{ $query }}</em>.</p>@endif
<table>
  <tr><th>#</th><th>Title</th><th>Price</th></tr>
  @foreach ($items as $item)
  <tr class="{{ $loop->odd ? 'odd' : 'even' }}"><td>{{ $item['id'] }}</td><td>{{ $item['title'] }}</td><td>{{ number_format($item['price'], 2) }}</td></tr>
  @endforeach
</table>
</body>
</html>

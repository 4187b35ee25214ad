module fephp.example/demo

go 1.19

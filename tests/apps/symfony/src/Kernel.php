<?php

namespace App;

use Symfony\Bundle\FrameworkBundle\FrameworkBundle;
use Symfony\Bundle\FrameworkBundle\Kernel\MicroKernelTrait;
use Symfony\Bundle\TwigBundle\TwigBundle;
use Symfony\Component\DependencyInjection\Loader\Configurator\ContainerConfigurator;
use Symfony\Component\HttpKernel\Kernel as BaseKernel;
use Symfony\Component\Routing\Loader\Configurator\RoutingConfigurator;

/** A small Symfony application: an HTML page from a Twig template, a JSON
 * endpoint and a page that uses the session. */
final class Kernel extends BaseKernel
{
    use MicroKernelTrait;

    public function registerBundles(): iterable
    {
        return [new FrameworkBundle(), new TwigBundle()];
    }

    public function getProjectDir(): string
    {
        return \dirname(__DIR__);
    }

    protected function configureContainer(ContainerConfigurator $container): void
    {
        $container->extension('framework', [
            'secret' => 'fe-php-symfony-test',
            'http_method_override' => false,
            'session' => [
                'storage_factory_id' => 'session.storage.factory.native',
                'handler_id' => null,
            ],
        ]);
        $container->extension('twig', [
            'default_path' => '%kernel.project_dir%/templates',
            'strict_variables' => true,
        ]);
        $container->services()
            ->set(Controller\Pages::class)
            ->autowire()
            ->public()
            ->tag('controller.service_arguments');
    }

    protected function configureRoutes(RoutingConfigurator $routes): void
    {
        $routes->add('page', '/page/{name}')->controller([Controller\Pages::class, 'page']);
        $routes->add('items', '/api/items')->controller([Controller\Pages::class, 'items']);
        $routes->add('visit', '/visit')->controller([Controller\Pages::class, 'visit']);
    }
}

"""Built-in feature plugins, each registered through the ``flowplane.plugins`` entry-point group."""

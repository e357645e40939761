"""Built-in node packs (installed as `graphgen_nodes`); each subpackage is one pack."""

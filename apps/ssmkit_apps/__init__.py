"""ssmkit task apps. Each subpackage is one app; apps never import each other."""

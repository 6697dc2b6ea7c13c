"""ssmkit.layers"""

"""ssmkit.engine"""

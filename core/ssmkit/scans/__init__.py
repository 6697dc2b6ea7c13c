"""ssmkit.scans"""

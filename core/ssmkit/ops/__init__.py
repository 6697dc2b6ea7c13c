"""ssmkit.ops"""

from recbole_pcl.config.configurator import Config, literal_value

__all__ = ["Config", "literal_value"]

from recbole_pcl.config.configurator import Config, literal_value

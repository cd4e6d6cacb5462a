from recbole_pcl.config.configurator import Config

-- inventory-db holds the inventory service's database; the service applies its own migrations.
CREATE DATABASE inventory;

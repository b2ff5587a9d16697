-- orders-db holds three databases, as in the local stack: the order service's, the 2PC coordinator's
-- decision log, and the lock service's table-lock backend. Each service applies its own migrations.
CREATE DATABASE orders;
CREATE DATABASE coordinator;
CREATE DATABASE locks;

PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE meta (
	"key" VARCHAR NOT NULL, 
	value VARCHAR NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO meta VALUES('schema_version','1');
CREATE TABLE orders (
	id INTEGER NOT NULL, 
	reference VARCHAR NOT NULL, 
	authority VARCHAR NOT NULL, 
	jurisdiction VARCHAR, 
	issued_on DATE NOT NULL, 
	received_at DATETIME NOT NULL, 
	effective_from DATETIME, 
	effective_until DATETIME, 
	requested_by VARCHAR, 
	legal_basis VARCHAR, 
	notice TEXT, 
	contact VARCHAR, 
	appeal VARCHAR, 
	policy VARCHAR NOT NULL, 
	status VARCHAR NOT NULL, 
	status_reason VARCHAR, 
	created_seq INTEGER NOT NULL, 
	updated_seq INTEGER NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO orders VALUES(1,'ES-2025-1','Juzgado de lo Mercantil nº 6 de Barcelona',NULL,'2025-02-01','2025-02-02 00:00:00.000000',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'default','active',NULL,1,6);
INSERT INTO orders VALUES(2,'DK-2025-7','Københavns Byret','DK','2025-03-01','2025-03-01 23:00:00.000000',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'dk','active',NULL,2,2);
INSERT INTO orders VALUES(3,'IT-2025-3','AGCOM','IT','2025-04-01','2025-03-31 22:00:00.000000',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'it','lifted','revoked on appeal',4,5);
CREATE TABLE journal (
	seq INTEGER NOT NULL, 
	at VARCHAR NOT NULL, 
	actor VARCHAR NOT NULL, 
	action VARCHAR NOT NULL, 
	payload TEXT NOT NULL, 
	prev_hash VARCHAR NOT NULL, 
	hash VARCHAR NOT NULL, 
	PRIMARY KEY (seq)
);
INSERT INTO journal VALUES(1,'2026-11-23T21:15:57.907388Z','fixture','order.add','{"order":{"appeal":null,"authority":"Juzgado de lo Mercantil nº 6 de Barcelona","contact":null,"effective_from":null,"effective_until":null,"issued_on":"2025-02-01","jurisdiction":null,"legal_basis":null,"notice":null,"policy":"default","received_at":"2025-02-02T00:00:00Z","reference":"ES-2025-1","requested_by":null,"status":"active","status_reason":null},"targets":["45.33.32.0/24","93.184.216.34","futbol-pirata.example"]}','0000000000000000000000000000000000000000000000000000000000000000','c7cbaddcdc2bdef071bd21b5a579124380db41f8d2584fd801f3c802aaf23414');
INSERT INTO journal VALUES(2,'2026-11-23T21:15:58.619367Z','fixture','order.add','{"forced":{"justification":"the order names the whole host and the resolver explicitly","refusals":["blogspot.com: is a public suffix (Public Suffix List)","8.8.8.8: overlaps protected network 8.8.8.8/32 (public resolver: Google)"]},"order":{"appeal":null,"authority":"Københavns Byret","contact":null,"effective_from":null,"effective_until":null,"issued_on":"2025-03-01","jurisdiction":"DK","legal_basis":null,"notice":null,"policy":"dk","received_at":"2025-03-01T23:00:00Z","reference":"DK-2025-7","requested_by":null,"status":"active","status_reason":null},"targets":["blogspot.com","8.8.8.8","mp3-clone.example"]}','c7cbaddcdc2bdef071bd21b5a579124380db41f8d2584fd801f3c802aaf23414','6baff1a9ed59875ec6142ba2ad6be2a9280e0775e915528bc5a8ddab0c614900');
INSERT INTO journal VALUES(3,'2026-11-23T21:15:59.338485Z','fixture','target.add','{"forced":{"justification":"court order lists the address","refusals":["1.1.1.1: overlaps protected network 1.1.1.1/32 (public resolver: Cloudflare)"]},"reference":"ES-2025-1","targets":["1.1.1.1"]}','6baff1a9ed59875ec6142ba2ad6be2a9280e0775e915528bc5a8ddab0c614900','c28979948fbe7347eaff74191e9e2930657a894dc47e259f042754baf0993066');
INSERT INTO journal VALUES(4,'2026-11-23T21:15:59.921911Z','fixture','order.add','{"order":{"appeal":null,"authority":"AGCOM","contact":null,"effective_from":null,"effective_until":null,"issued_on":"2025-04-01","jurisdiction":"IT","legal_basis":null,"notice":null,"policy":"it","received_at":"2025-03-31T22:00:00Z","reference":"IT-2025-3","requested_by":null,"status":"active","status_reason":null},"targets":["calcio-gratis.example"]}','c28979948fbe7347eaff74191e9e2930657a894dc47e259f042754baf0993066','4de55ad287f549505b33e4dc3aac03c12fa2c9c72a55a740a91307ea5de3c2f8');
INSERT INTO journal VALUES(5,'2026-11-23T21:16:00.610872Z','fixture','order.status','{"reason":"revoked on appeal","reference":"IT-2025-3","status":"lifted"}','4de55ad287f549505b33e4dc3aac03c12fa2c9c72a55a740a91307ea5de3c2f8','7d911ca9ffe84eb58966d6737d1eb10e6ba68ce5581e4dd4022b7355f5225bbe');
INSERT INTO journal VALUES(6,'2026-11-23T21:16:01.248241Z','fixture','target.remove','{"reference":"ES-2025-1","targets":["93.184.216.34"]}','7d911ca9ffe84eb58966d6737d1eb10e6ba68ce5581e4dd4022b7355f5225bbe','27e6c784627fc087cb48cc308500f6ed61edbe68eb59d28cb3c38fd3be09db90');
CREATE TABLE hits (
	day DATE NOT NULL, 
	reference VARCHAR NOT NULL, 
	target VARCHAR NOT NULL, 
	count INTEGER NOT NULL, 
	PRIMARY KEY (day, reference, target)
);
CREATE TABLE targets (
	id INTEGER NOT NULL, 
	order_id INTEGER NOT NULL, 
	kind VARCHAR NOT NULL, 
	value VARCHAR NOT NULL, 
	"match" VARCHAR NOT NULL, 
	added_seq INTEGER NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_target UNIQUE (order_id, kind, value, "match"), 
	FOREIGN KEY(order_id) REFERENCES orders (id)
);
INSERT INTO targets VALUES(1,1,'prefix','45.33.32.0/24','subtree',1);
INSERT INTO targets VALUES(3,1,'domain','futbol-pirata.example','subtree',1);
INSERT INTO targets VALUES(4,2,'domain','blogspot.com','subtree',2);
INSERT INTO targets VALUES(5,2,'ip','8.8.8.8','subtree',2);
INSERT INTO targets VALUES(6,2,'domain','mp3-clone.example','subtree',2);
INSERT INTO targets VALUES(7,1,'ip','1.1.1.1','subtree',3);
INSERT INTO targets VALUES(8,3,'domain','calcio-gratis.example','subtree',4);
CREATE INDEX ix_orders_status ON orders (status);
CREATE UNIQUE INDEX ix_orders_reference ON orders (reference);
CREATE INDEX ix_journal_at ON journal (at);
CREATE INDEX ix_targets_order_id ON targets (order_id);
CREATE INDEX ix_targets_value ON targets (value);
COMMIT;

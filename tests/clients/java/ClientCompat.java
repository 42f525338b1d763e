// Client-compatibility tests with the RabbitMQ Java client (Debian's
// librabbitmq-client-java, /usr/share/java/amqp-client.jar), compiled with
// plain javac. RabbitMQ tutorials 1-6 plus confirms, direct reply-to,
// mandatory returns and channel errors. No sleeps: waits are
// BlockingQueue.poll(timeout) on events delivered by the client.
//
// Prints one line per test ("ok NAME" / "FAIL NAME: reason") and finally
// "java: N passed, N failed"; exits 1 if anything failed.

import com.rabbitmq.client.*;

import java.nio.charset.StandardCharsets;
import java.util.*;
import java.util.concurrent.*;

public class ClientCompat {
    static final String URL = Optional.ofNullable(System.getenv("AMQP_URL"))
            .filter(s -> !s.isEmpty()).orElse("amqp://guest:guest@127.0.0.1:5672/%2F");
    static final long TIMEOUT_MS = 10_000;
    static final List<Connection> open = new ArrayList<>();
    static final List<String[]> toDelete = new ArrayList<>();

    interface Body { void run() throws Exception; }

    static void check(boolean cond, String msg) {
        if (!cond) throw new AssertionError(msg);
    }

    static void eq(Object got, Object want, String what) {
        if (!Objects.equals(got, want)) throw new AssertionError(what + ": got " + got + ", want " + want);
    }

    static String unique(String prefix) {
        return "lepus-java-" + prefix + "-" + UUID.randomUUID().toString().substring(0, 10);
    }

    static Connection connect() throws Exception {
        ConnectionFactory f = new ConnectionFactory();
        f.setUri(URL);
        f.setConnectionTimeout(10_000);
        f.setAutomaticRecoveryEnabled(false);
        Connection c = f.newConnection();
        open.add(c);
        return c;
    }

    static String s(byte[] b) { return new String(b, StandardCharsets.UTF_8); }
    static byte[] b(String s) { return s.getBytes(StandardCharsets.UTF_8); }

    static <T> T poll(BlockingQueue<T> q, String what) throws InterruptedException {
        T v = q.poll(TIMEOUT_MS, TimeUnit.MILLISECONDS);
        if (v == null) throw new AssertionError("timed out waiting for " + what);
        return v;
    }

    static List<String> drain(Channel ch, String queue) throws Exception {
        List<String> out = new ArrayList<>();
        for (int i = 0; i < 1000; i++) {
            GetResponse r = ch.basicGet(queue, true);
            if (r == null) return out;
            out.add(s(r.getBody()));
        }
        throw new AssertionError("queue did not drain");
    }

    static BlockingQueue<Delivery> consume(Channel ch, String queue, boolean autoAck) throws Exception {
        BlockingQueue<Delivery> q = new LinkedBlockingQueue<>();
        ch.basicConsume(queue, autoAck, (tag, d) -> q.add(d), tag -> { });
        return q;
    }

    static int fib(int n) {
        int a = 0, b = 1;
        for (int i = 0; i < n; i++) { int t = a + b; a = b; b = t; }
        return a;
    }

    // --- tests ---------------------------------------------------------------
    static void serverProperties() throws Exception {
        Connection c = connect();
        Map<String, Object> props = c.getServerProperties();
        @SuppressWarnings("unchecked")
        Map<String, Object> caps = (Map<String, Object>) props.get("capabilities");
        check(caps != null, "no capabilities");
        for (String k : new String[]{"publisher_confirms", "basic.nack", "consumer_cancel_notify",
                "exchange_exchange_bindings", "authentication_failure_close"}) {
            eq(caps.get(k), Boolean.TRUE, "capability " + k);
        }
        check(c.getFrameMax() >= 4096, "frame_max " + c.getFrameMax());
    }

    static void t1HelloWorld() throws Exception {
        Channel ch = connect().createChannel();
        String queue = unique("hello");
        toDelete.add(new String[]{"queue", queue});
        AMQP.Queue.DeclareOk ok = ch.queueDeclare(queue, false, false, false, null);
        eq(ok.getQueue(), queue, "queue name");
        eq(ok.getMessageCount(), 0, "message count");
        ch.basicPublish("", queue, null, b("Hello World!"));
        Delivery d = poll(consume(ch, queue, true), "hello world");
        eq(s(d.getBody()), "Hello World!", "body");
        eq(d.getEnvelope().getExchange(), "", "exchange");
        eq(d.getEnvelope().getRoutingKey(), queue, "routing key");
        eq(d.getEnvelope().isRedeliver(), false, "redelivered");
    }

    static void t2WorkQueues() throws Exception {
        Channel producer = connect().createChannel();
        Connection slowConn = connect();
        Channel slow = slowConn.createChannel();
        Channel fast = connect().createChannel();
        String queue = unique("task_queue");
        toDelete.add(new String[]{"queue", queue});
        producer.queueDeclare(queue, true, false, false, null);
        producer.confirmSelect();
        slow.basicQos(1);
        fast.basicQos(1);
        BlockingQueue<String> events = new LinkedBlockingQueue<>();
        List<String> slowGot = Collections.synchronizedList(new ArrayList<>());
        slow.basicConsume(queue, false, (tag, d) -> { slowGot.add(s(d.getBody())); events.add("slow"); }, tag -> { });
        BlockingQueue<Delivery> fastGot = new LinkedBlockingQueue<>();
        fast.basicConsume(queue, false, (tag, d) -> {
            fast.basicAck(d.getEnvelope().getDeliveryTag(), false);
            fastGot.add(d);
            events.add("fast");
        }, tag -> { });
        int n = 10;
        for (int i = 0; i < n; i++) {
            producer.basicPublish("", queue, MessageProperties.PERSISTENT_TEXT_PLAIN, b("task " + i));
        }
        producer.waitForConfirmsOrDie(TIMEOUT_MS);
        int slowCount = 0;
        for (int i = 0; i < n; i++) if (poll(events, "dispatch").equals("slow")) slowCount++;
        eq(slowCount, 1, "messages given to the busy worker");
        eq(fastGot.size(), n - 1, "messages given to the free worker");
        String held = slowGot.get(0);
        slowConn.close();
        Delivery last = null;
        for (int i = 0; i < n; i++) last = poll(fastGot, "fast deliveries");
        eq(s(last.getBody()), held, "redelivered body");
        eq(last.getEnvelope().isRedeliver(), true, "redelivered flag");
    }

    static void t3FanoutPubSub() throws Exception {
        Channel pub = connect().createChannel();
        String exchange = unique("logs");
        toDelete.add(new String[]{"exchange", exchange});
        pub.exchangeDeclare(exchange, BuiltinExchangeType.FANOUT);
        pub.confirmSelect();
        List<BlockingQueue<Delivery>> subs = new ArrayList<>();
        Set<String> names = new HashSet<>();
        for (int i = 0; i < 2; i++) {
            Channel ch = connect().createChannel();
            String q = ch.queueDeclare().getQueue();  // server-named, exclusive, auto-delete
            check(q.startsWith("amq.gen-"), "server-named queue " + q);
            names.add(q);
            ch.queueBind(q, exchange, "");
            subs.add(consume(ch, q, true));
        }
        eq(names.size(), 2, "distinct server-named queues");
        for (int i = 0; i < 3; i++) pub.basicPublish(exchange, "x" + i, null, b("log " + i));
        pub.waitForConfirmsOrDie(TIMEOUT_MS);
        for (BlockingQueue<Delivery> s : subs) {
            List<String> got = new ArrayList<>();
            for (int i = 0; i < 3; i++) got.add(s(poll(s, "fanout delivery").getBody()));
            eq(got, Arrays.asList("log 0", "log 1", "log 2"), "fanout");
        }
    }

    static void t4DirectRouting() throws Exception {
        Channel ch = connect().createChannel();
        String exchange = unique("direct_logs");
        toDelete.add(new String[]{"exchange", exchange});
        ch.exchangeDeclare(exchange, "direct");
        ch.confirmSelect();
        String qErr = ch.queueDeclare().getQueue();
        String qAll = ch.queueDeclare().getQueue();
        ch.queueBind(qErr, exchange, "error");
        for (String sev : new String[]{"info", "warning", "error"}) ch.queueBind(qAll, exchange, sev);
        for (String sev : new String[]{"info", "warning", "error", "debug"}) {
            ch.basicPublish(exchange, sev, null, b(sev + " msg"));
        }
        ch.waitForConfirmsOrDie(TIMEOUT_MS);
        eq(drain(ch, qErr), Arrays.asList("error msg"), "error queue");
        eq(drain(ch, qAll), Arrays.asList("info msg", "warning msg", "error msg"), "all queue");
    }

    static void t5TopicRouting() throws Exception {
        Channel ch = connect().createChannel();
        String exchange = unique("topic_logs");
        toDelete.add(new String[]{"exchange", exchange});
        ch.exchangeDeclare(exchange, "topic");
        ch.confirmSelect();
        Map<String, String> queues = new LinkedHashMap<>();
        String[][] bindings = {{"q1", "*.orange.*"}, {"q2", "*.*.rabbit", "lazy.#"}, {"qAll", "#"}, {"qMid", "a.#.z"}};
        for (String[] bnd : bindings) {
            String q = ch.queueDeclare().getQueue();
            queues.put(bnd[0], q);
            for (int i = 1; i < bnd.length; i++) ch.queueBind(q, exchange, bnd[i]);
        }
        List<String> keys = Arrays.asList("quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox",
                "lazy.brown.fox", "lazy.pink.rabbit", "quick.brown.fox", "orange", "quick.orange.male.rabbit",
                "lazy.orange.male.rabbit", "lazy", "a.z", "a.b.c.z", "a.b");
        for (String k : keys) ch.basicPublish(exchange, k, null, b(k));
        ch.waitForConfirmsOrDie(TIMEOUT_MS);
        eq(drain(ch, queues.get("q1")), Arrays.asList("quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"), "q1");
        eq(drain(ch, queues.get("q2")), Arrays.asList("quick.orange.rabbit", "lazy.orange.elephant", "lazy.brown.fox",
                "lazy.pink.rabbit", "lazy.orange.male.rabbit", "lazy"), "q2");
        eq(drain(ch, queues.get("qAll")), keys, "#");
        eq(drain(ch, queues.get("qMid")), Arrays.asList("a.z", "a.b.c.z"), "a.#.z");
    }

    static void startRpcServer(String queue) throws Exception {
        Channel server = connect().createChannel();
        server.queueDeclare(queue, false, false, false, null);
        toDelete.add(new String[]{"queue", queue});
        server.basicQos(1);
        server.basicConsume(queue, false, (tag, d) -> {
            int n = Integer.parseInt(s(d.getBody()));
            AMQP.BasicProperties reply = new AMQP.BasicProperties.Builder()
                    .correlationId(d.getProperties().getCorrelationId()).build();
            server.basicPublish("", d.getProperties().getReplyTo(), reply, b(Integer.toString(fib(n))));
            server.basicAck(d.getEnvelope().getDeliveryTag(), false);
        }, tag -> { });
    }

    static void t6Rpc() throws Exception {
        String rpcQueue = unique("rpc_queue");
        startRpcServer(rpcQueue);
        Channel ch = connect().createChannel();
        String cb = ch.queueDeclare("", false, true, true, null).getQueue();
        BlockingQueue<Delivery> replies = consume(ch, cb, true);
        Map<String, Integer> want = new HashMap<>();
        for (int n : new int[]{0, 1, 10, 30}) {
            String id = UUID.randomUUID().toString();
            want.put(id, fib(n));
            ch.basicPublish("", rpcQueue, new AMQP.BasicProperties.Builder().correlationId(id).replyTo(cb).build(),
                    b(Integer.toString(n)));
        }
        for (int i = 0; i < 4; i++) {
            Delivery d = poll(replies, "rpc reply");
            Integer exp = want.remove(d.getProperties().getCorrelationId());
            check(exp != null, "unknown correlation id " + d.getProperties().getCorrelationId());
            eq(s(d.getBody()), exp.toString(), "fib");
        }
    }

    static void directReplyTo() throws Exception {
        String rpcQueue = unique("rpc_direct");
        startRpcServer(rpcQueue);
        Channel ch = connect().createChannel();
        BlockingQueue<Delivery> replies = consume(ch, "amq.rabbitmq.reply-to", true);
        for (int i = 0; i < 3; i++) {
            ch.basicPublish("", rpcQueue, new AMQP.BasicProperties.Builder().correlationId("c" + i)
                    .replyTo("amq.rabbitmq.reply-to").build(), b(Integer.toString(10 + i)));
        }
        List<String> got = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            Delivery d = poll(replies, "direct reply");
            check(d.getEnvelope().getRoutingKey().startsWith("amq.rabbitmq.reply-to."), "routing key " + d.getEnvelope().getRoutingKey());
            got.add(d.getProperties().getCorrelationId() + "=" + s(d.getBody()));
        }
        Collections.sort(got);
        eq(got, Arrays.asList("c0=55", "c1=89", "c2=144"), "direct replies");
    }

    static void confirms() throws Exception {
        Channel ch = connect().createChannel();
        String queue = unique("confirms");
        toDelete.add(new String[]{"queue", queue});
        ch.queueDeclare(queue, false, false, false, null);
        ch.confirmSelect();
        // one by one
        for (int i = 0; i < 20; i++) {
            ch.basicPublish("", queue, null, b("one"));
            ch.waitForConfirmsOrDie(TIMEOUT_MS);
        }
        // async with listener
        ConcurrentSkipListSet<Long> outstanding = new ConcurrentSkipListSet<>();
        BlockingQueue<Boolean> done = new LinkedBlockingQueue<>();
        List<Long> nacked = Collections.synchronizedList(new ArrayList<>());
        ch.addConfirmListener(new ConfirmListener() {
            void settle(long tag, boolean multiple) {
                if (multiple) outstanding.headSet(tag, true).clear(); else outstanding.remove(tag);
                if (outstanding.isEmpty()) done.add(true);
            }
            public void handleAck(long tag, boolean multiple) { settle(tag, multiple); }
            public void handleNack(long tag, boolean multiple) { nacked.add(tag); settle(tag, multiple); }
        });
        int n = 300;
        long first = ch.getNextPublishSeqNo();
        eq(first, 21L, "next publish seq no");
        for (int i = 0; i < n; i++) {
            outstanding.add(ch.getNextPublishSeqNo());
            ch.basicPublish("", queue, null, b("async"));
        }
        while (!outstanding.isEmpty()) poll(done, "all confirms");
        check(nacked.isEmpty(), "nacks: " + nacked);
        eq(ch.queueDeclarePassive(queue).getMessageCount(), 20 + n, "queue depth");
    }

    static void mandatoryReturn() throws Exception {
        Channel ch = connect().createChannel();
        String exchange = unique("mandatory");
        toDelete.add(new String[]{"exchange", exchange});
        ch.exchangeDeclare(exchange, "direct");
        BlockingQueue<Return> returns = new LinkedBlockingQueue<>();
        ch.addReturnListener(returns::add);
        ch.basicPublish(exchange, "nowhere", true, new AMQP.BasicProperties.Builder().messageId("m1").build(), b("bounce"));
        Return r = poll(returns, "basic.return");
        eq(r.getReplyCode(), 312, "reply code");
        eq(r.getReplyText(), "NO_ROUTE", "reply text");
        eq(r.getExchange(), exchange, "exchange");
        eq(r.getRoutingKey(), "nowhere", "routing key");
        eq(s(r.getBody()), "bounce", "body");
        eq(r.getProperties().getMessageId(), "m1", "message id");
    }

    static void passive404ClosesChannelOnly() throws Exception {
        Connection c = connect();
        Channel ch = c.createChannel();
        try {
            ch.queueDeclarePassive(unique("missing"));
            throw new AssertionError("passive declare of a missing queue succeeded");
        } catch (java.io.IOException e) {
            ShutdownSignalException sse = (ShutdownSignalException) e.getCause();
            check(!sse.isHardError(), "expected a channel error, got a connection error");
            AMQP.Channel.Close close = (AMQP.Channel.Close) sse.getReason();
            eq(close.getReplyCode(), 404, "reply code");
            check(close.getReplyText().startsWith("NOT_FOUND"), close.getReplyText());
        }
        check(!ch.isOpen(), "channel still open");
        check(c.isOpen(), "connection closed by a channel error");
        Channel ch2 = c.createChannel();
        ch2.confirmSelect();
        String q = ch2.queueDeclare().getQueue();
        ch2.basicPublish("", q, null, b("still alive"));
        ch2.waitForConfirmsOrDie(TIMEOUT_MS);
        eq(drain(ch2, q), Arrays.asList("still alive"), "after error");
    }

    public static void main(String[] args) throws Exception {
        Map<String, Body> tests = new LinkedHashMap<>();
        tests.put("server_properties", ClientCompat::serverProperties);
        tests.put("t1_hello_world", ClientCompat::t1HelloWorld);
        tests.put("t2_work_queues_fair_dispatch", ClientCompat::t2WorkQueues);
        tests.put("t3_fanout_pubsub", ClientCompat::t3FanoutPubSub);
        tests.put("t4_direct_routing", ClientCompat::t4DirectRouting);
        tests.put("t5_topic_routing", ClientCompat::t5TopicRouting);
        tests.put("t6_rpc", ClientCompat::t6Rpc);
        tests.put("direct_reply_to", ClientCompat::directReplyTo);
        tests.put("confirms", ClientCompat::confirms);
        tests.put("mandatory_return", ClientCompat::mandatoryReturn);
        tests.put("passive_404_closes_channel_only", ClientCompat::passive404ClosesChannelOnly);
        int passed = 0, failed = 0;
        for (Map.Entry<String, Body> t : tests.entrySet()) {
            try {
                t.getValue().run();
                System.out.println("ok " + t.getKey());
                passed++;
            } catch (Throwable e) {
                System.out.println("FAIL " + t.getKey() + ": " + e);
                failed++;
            } finally {
                cleanup();
            }
        }
        System.out.println("java: " + passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }

    static void cleanup() {
        for (Connection c : open) {
            try { if (c.isOpen()) c.close(5000); } catch (Exception ignored) { }
        }
        open.clear();
        if (toDelete.isEmpty()) return;
        try {
            Connection c = connect();
            for (String[] item : toDelete) {
                try {
                    Channel ch = c.createChannel();
                    if (item[0].equals("queue")) ch.queueDelete(item[1]); else ch.exchangeDelete(item[1]);
                    ch.close();
                } catch (Exception ignored) { }
            }
            c.close(5000);
        } catch (Exception ignored) { }
        open.clear();
        toDelete.clear();
    }
}

// PgJDBC on typed PII columns (issue 13) through pgcloak, compared with a table of real
// types: every statement runs on jdbc_pii (PII columns, text in Postgres, typed by the
// policy) and on jdbc_real (the same columns with real types). PgJDBC binds LocalDate as
// date, OffsetDateTime as timestamptz, BigDecimal as numeric, booleans as bool (text), int,
// UUID and bytes in binary, a PGobject as its named type; it reads results in text, and in
// binary once a statement is server-prepared (prepareThreshold=-1: from the first use).
//
// Usage: java -cp postgresql.jar java/JdbcTyped.java postgresql://USER:PASSWORD@HOST:PORT/DB
// tests/typed_clients.rs creates both tables (TYPED_COLUMNS there) and the policy. Prints
// "jdbc_typed OK" and exits 0 when every check passed; each prints ok/FAIL to stderr.

import java.math.BigDecimal;
import java.net.URI;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Types;
import java.time.LocalDate;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import java.util.Properties;
import java.util.UUID;
import org.postgresql.util.PGobject;

public class JdbcTyped {
    static final String PII = "jdbc_pii";
    static final String[] TABLES = {PII, "jdbc_real"};
    static final String NAMES = "dob, amount, active, attrs, seen, n, uid, blob";

    static Object[][] rows() {
        return new Object[][] {
            {1, LocalDate.of(1990, 5, 17), new BigDecimal("1234.5"), true, "{\"tier\": \"gold\", \"tags\": [1, 2.5]}",
                OffsetDateTime.of(2024, 3, 1, 12, 30, 0, 0, ZoneOffset.ofHours(2)), 7,
                UUID.fromString("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), new byte[] {0, (byte) 255, 'p', 'i', 'i'}},
            {2, LocalDate.of(2000, 2, 29), new BigDecimal("-0.01"), false, "[]",
                OffsetDateTime.of(1999, 12, 31, 23, 59, 59, 999_999_000, ZoneOffset.UTC), Integer.MIN_VALUE,
                new UUID(0, 0), new byte[0]},
            {3, null, null, null, null, null, null, null, null},
        };
    }

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static void bind(Connection conn, PreparedStatement st, Object[] row) throws SQLException {
        st.setInt(1, (Integer) row[0]);
        st.setObject(2, row[1]); // LocalDate, or null
        st.setBigDecimal(3, (BigDecimal) row[2]);
        if (row[3] == null) st.setNull(4, Types.BOOLEAN); else st.setBoolean(4, (Boolean) row[3]);
        PGobject json = new PGobject();
        json.setType("jsonb");
        json.setValue((String) row[4]);
        st.setObject(5, json);
        st.setObject(6, row[5]);
        if (row[6] == null) st.setNull(7, Types.INTEGER); else st.setInt(7, (Integer) row[6]);
        st.setObject(8, row[7]);
        st.setBytes(9, (byte[]) row[8]);
    }

    /** Every row of `table`, read with the getters an application uses, as strings. */
    static List<String> read(Connection conn, String table) throws SQLException {
        List<String> out = new ArrayList<>();
        try (PreparedStatement st = conn.prepareStatement("SELECT id, " + NAMES + " FROM " + table + " ORDER BY id");
             ResultSet r = st.executeQuery()) {
            while (r.next()) {
                Object active = r.getObject(4);
                byte[] blob = r.getBytes(9);
                Object n = r.getObject(7);
                out.add(String.join("|", Arrays.asList(
                    String.valueOf(r.getInt(1)),
                    String.valueOf(r.getObject(2, LocalDate.class)),
                    String.valueOf(r.getBigDecimal(3)),
                    String.valueOf(active),
                    String.valueOf(r.getString(5)),
                    String.valueOf(r.getObject(6, OffsetDateTime.class)),
                    n == null ? "null" : n.getClass().getSimpleName() + ":" + n,
                    String.valueOf(r.getObject(8, UUID.class)),
                    blob == null ? "null" : Arrays.toString(blob))));
                check(active == null || active instanceof Boolean, "boolean column read as " + String.valueOf(active));
            }
        }
        return out;
    }

    static void roundTrip(Connection conn, String mode) throws SQLException {
        for (String table : TABLES) {
            conn.createStatement().execute("DELETE FROM " + table);
            try (PreparedStatement st = conn.prepareStatement(
                    "INSERT INTO " + table + " (id, " + NAMES + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")) {
                for (Object[] row : rows()) {
                    bind(conn, st, row);
                    st.executeUpdate();
                }
            }
        }
        List<String> pii = read(conn, PII), real = read(conn, "jdbc_real");
        check(pii.equals(real), mode + ": " + pii + " != " + real);
        String first = "1|1990-05-17|1234.50|true|{\"tags\": [1, 2.5], \"tier\": \"gold\"}|2024-03-01T10:30Z|Integer:7|"
            + "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|[0, -1, 112, 105, 105]";
        check(pii.get(0).equals(first), mode + ": " + pii.get(0));
        check(pii.get(2).equals("3|null|null|null|null|null|null|null|null"), mode + ": " + pii.get(2));
    }

    static List<Integer> ids(Connection conn, String sql, Object... args) throws SQLException {
        List<Integer> out = new ArrayList<>();
        try (PreparedStatement st = conn.prepareStatement(sql)) {
            for (int i = 0; i < args.length; i++) {
                if (args[i] instanceof BigDecimal) st.setBigDecimal(i + 1, (BigDecimal) args[i]);
                else st.setObject(i + 1, args[i]);
            }
            try (ResultSet r = st.executeQuery()) {
                while (r.next()) out.add(r.getInt(1));
            }
        }
        return out;
    }

    static void search(Connection conn, String mode) throws SQLException {
        for (String table : TABLES) {
            String select = "SELECT id FROM " + table + " WHERE ";
            for (int repeat = 0; repeat < 6; repeat++) { // past prepareThreshold: server-prepared
                check(ids(conn, select + "dob = ?", LocalDate.of(1990, 5, 17)).equals(List.of(1)), mode + " " + table + " dob");
            }
            check(ids(conn, select + "amount = ?", new BigDecimal("1234.500")).equals(List.of(1)), mode + " amount");
            check(ids(conn, select + "seen = ?", OffsetDateTime.of(2024, 3, 1, 10, 30, 0, 0, ZoneOffset.UTC)).equals(List.of(1)), mode + " seen");
            check(ids(conn, select + "n = ?", Integer.MIN_VALUE).equals(List.of(2)), mode + " n");
            check(ids(conn, select + "uid = ?", new UUID(0, 0)).equals(List.of(2)), mode + " uid");
            check(ids(conn, select + "dob IN (?, ?) ORDER BY id", LocalDate.of(1990, 5, 17), LocalDate.of(2000, 2, 29)).equals(List.of(1, 2)), mode + " IN");
            try (PreparedStatement st = conn.prepareStatement(select + "dob = ANY(?) ORDER BY id")) {
                st.setArray(1, conn.createArrayOf("date", new Object[] {java.sql.Date.valueOf("2000-02-29"), java.sql.Date.valueOf("2020-01-01")}));
                try (ResultSet r = st.executeQuery()) {
                    check(r.next() && r.getInt(1) == 2 && !r.next(), mode + " = ANY");
                }
            }
            check(ids(conn, select + "dob IS NULL").equals(List.of(3)), mode + " IS NULL");
        }
    }

    static void invalid(Connection conn, String mode) throws SQLException {
        Object[][] cases = {
            {"dob", "2020-13-45", "22008"},
            {"amount", new BigDecimal("123456789.5"), "22003"},
            {"attrs", "{", "22P02"},
            {"uid", "123", "22P02"},
        };
        for (Object[] c : cases) {
            List<String> states = new ArrayList<>();
            for (String table : TABLES) {
                try (PreparedStatement st = conn.prepareStatement("INSERT INTO " + table + " (id, " + c[0] + ") VALUES (20, ?)")) {
                    if (c[1] instanceof BigDecimal) st.setBigDecimal(1, (BigDecimal) c[1]);
                    else st.setObject(1, c[1], Types.OTHER); // untyped text
                    st.executeUpdate();
                    states.add(null);
                } catch (SQLException e) {
                    states.add(e.getSQLState());
                    if (table.equals(PII)) {
                        check(e.getMessage().contains(PII + "." + c[0]) && !e.getMessage().contains(c[1].toString()), e.getMessage());
                    }
                }
            }
            check(states.equals(List.of(c[2], c[2])), mode + " " + c[0] + " = " + c[1] + ": " + states);
        }
    }

    public static void main(String[] args) throws Exception {
        URI uri = new URI(args[0]);
        String[] userInfo = uri.getUserInfo().split(":", 2);
        String url = "jdbc:postgresql://" + uri.getHost() + ":" + uri.getPort() + uri.getPath();
        int failed = 0;
        for (String threshold : new String[] {"5", "-1"}) {
            Properties props = new Properties();
            props.setProperty("user", userInfo[0]);
            props.setProperty("password", userInfo[1]);
            props.setProperty("prepareThreshold", threshold);
            String mode = "prepareThreshold=" + threshold;
            try (Connection conn = DriverManager.getConnection(url, props)) {
                conn.createStatement().execute("SET TimeZone = 'UTC'");
                String[] names = {"roundTrip", "search", "invalid"};
                for (String name : names) {
                    try {
                        switch (name) {
                            case "roundTrip": roundTrip(conn, mode); break;
                            case "search": search(conn, mode); break;
                            default: invalid(conn, mode);
                        }
                        System.err.println("ok   " + name + " (" + mode + ")");
                    } catch (Exception | AssertionError e) {
                        failed++;
                        System.err.println("FAIL " + name + " (" + mode + ")");
                        e.printStackTrace();
                    }
                }
            }
        }
        if (failed > 0) System.exit(1);
        System.out.println("jdbc_typed OK");
    }
}

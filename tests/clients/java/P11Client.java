// P11Client — the Java 17 SunPKCS11 client of the clients suite (scripts/clients.sh).
//
// Usage: java -cp CLASSES P11Client CONFIG KEYS OUT [sessions]
//   CONFIG    a SunPKCS11 configuration file (name, library, slotListIndex); its
//             ${...} items are Java system properties (-Dp11clients.library=...)
//   KEYS      the mktokens.sh key directory (ec-pub.pem, rsa-pub.pem, aes.key)
//   OUT       a directory for the outputs that clients.sh checks again with openssl
//   sessions  run the session key cases instead of the token key cases
//
// Every case of a run is in this one JVM (its start is the slow part) and
// prints "pass NAME" or "FAIL NAME: why (cause: the innermost exception)";
// the exit status is 1 if any case failed.
// The token key cases (the default): the KeyStore lists the EC and RSA
// private keys and the AES key; SHA256withECDSA, SHA256withRSA and RSASSA-PSS
// (SHA-256, MGF1 SHA-256, salt 32) signatures made by the token, verified here
// with the public keys read from the PEM files through the default providers
// (SunEC, SunRsaSign), and written to OUT for openssl; AES/CBC/NoPadding
// single-part and AES/CBC/PKCS5Padding multi-part with the token's aes-key,
// compared with SunJCE under the raw key bytes of KEYS/aes.key, and written to
// OUT; and the provider's SecureRandom (two draws of 64 bytes, not zero,
// different). None of them uses a key made in one session from another.
// The session key cases ("sessions"), after a login (the KeyStore's load):
// keys that SunPKCS11 makes as session objects (CKA_TOKEN false) in one
// session and uses from others (see the comment above ROUNDS for how): an AES
// key from KeyGenerator, AES/CBC encryptions that agree and decrypt back; an
// EC P-256 pair from KeyPairGenerator, signatures verified by SunEC (the last
// written to OUT as java-kpg.{msg,sig} and java-kpg-pub.pem for openssl); a
// software AES SecretKeySpec (imported with C_CreateObject), ciphertexts equal
// to SunJCE's and decrypted by it (the last written as
// java-soft.{key.hex,iv,in,out} for openssl); a software EC public key from
// SunEC (imported), verifying SunEC's signatures through the token and
// rejecting an altered message.

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.Key;
import java.security.KeyFactory;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.PublicKey;
import java.security.SecureRandom;
import java.security.Security;
import java.security.Signature;
import java.security.spec.ECGenParameterSpec;
import java.security.spec.MGF1ParameterSpec;
import java.security.spec.PSSParameterSpec;
import java.security.spec.X509EncodedKeySpec;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.Collections;
import java.util.List;
import javax.crypto.Cipher;
import javax.crypto.KeyGenerator;
import javax.crypto.SecretKey;
import javax.crypto.spec.IvParameterSpec;
import javax.crypto.spec.SecretKeySpec;

public final class P11Client {
    private static final char[] PIN = "1234".toCharArray();

    private interface Case {
        void run() throws Exception;
    }

    private final Provider p11;
    private final Path keys;
    private final Path out;
    private KeyStore store;
    private int failures;

    private P11Client(Provider p11, Path keys, Path out) {
        this.p11 = p11;
        this.keys = keys;
        this.out = out;
    }

    public static void main(String[] args) throws Exception {
        boolean sessions = args.length == 4 && args[3].equals("sessions");
        if (args.length != 3 && !sessions) {
            System.err.println("usage: P11Client CONFIG KEYS OUT [sessions]");
            System.exit(2);
        }
        Provider base = Security.getProvider("SunPKCS11");
        if (base == null) {
            System.err.println("P11Client: no SunPKCS11 provider in this JVM");
            System.exit(2);
        }
        Provider p11 = base.configure(args[0]);
        P11Client c = new P11Client(p11, Path.of(args[1]), Path.of(args[2]));
        Files.createDirectories(c.out);
        if (sessions) {
            // The keys SunPKCS11 makes are private objects: log in first.
            c.check("keystore-login", c::store);
            c.check("keygen-aes-sessions", c::generatedAes);
            c.check("keypairgen-ec-sessions", c::generatedEc);
            c.check("softkey-aes-sessions", c::softwareAes);
            c.check("softkey-ec-verify-sessions", c::softwareEcVerify);
            System.exit(c.failures == 0 ? 0 : 1);
        }
        c.check("keystore-aliases", c::keystore);
        c.check("sign-ecdsa", () -> c.sign("SHA256withECDSA", null, "ec-key", "ec-pub.pem", "EC", "ec"));
        c.check("sign-rsa", () -> c.sign("SHA256withRSA", null, "rsa-key", "rsa-pub.pem", "RSA", "rsa"));
        PSSParameterSpec pss = new PSSParameterSpec("SHA-256", "MGF1", MGF1ParameterSpec.SHA256, 32, 1);
        c.check("sign-rsa-pss", () -> c.sign("RSASSA-PSS", pss, "rsa-key", "rsa-pub.pem", "RSA", "pss"));
        c.check("aes-cbc-nopad", c::aesNoPadding);
        c.check("aes-cbc-pkcs5-multipart", c::aesPadded);
        c.check("secure-random", c::random);
        System.exit(c.failures == 0 ? 0 : 1);
    }

    private void check(String name, Case body) {
        try {
            body.run();
            System.out.println("pass " + name);
        } catch (Throwable t) {
            failures++;
            Throwable root = t;
            while (root.getCause() != null) {
                root = root.getCause();
            }
            System.out.println("FAIL " + name + ": " + t + (root != t ? " (cause: " + root + ")" : ""));
            t.printStackTrace(System.out);
        }
    }

    private static void require(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    /** The token's KeyStore, loaded (logged in) once; later cases use its keys. */
    private KeyStore store() throws Exception {
        if (store == null) {
            KeyStore ks = KeyStore.getInstance("PKCS11", p11);
            ks.load(null, PIN);
            store = ks;
        }
        return store;
    }

    private void keystore() throws Exception {
        KeyStore ks = store();
        List<String> aliases = Collections.list(ks.aliases());
        Collections.sort(aliases);
        Files.writeString(out.resolve("aliases.txt"), String.join("\n", aliases) + "\n");
        for (String alias : new String[] {"ec-key", "rsa-key"}) {
            require(aliases.contains(alias), "no alias " + alias + " in " + aliases);
            require(ks.isKeyEntry(alias), alias + " is not a key entry");
            require(ks.getKey(alias, null) instanceof PrivateKey, alias + " is not a private key");
        }
        require(aliases.contains("aes-key"), "no alias aes-key in " + aliases);
        require(ks.getKey("aes-key", null) instanceof SecretKey, "aes-key is not a secret key");
    }

    private PrivateKey privateKey(String alias) throws Exception {
        Object key = store().getKey(alias, null);
        require(key instanceof PrivateKey, alias + " is not a private key: " + key);
        return (PrivateKey) key;
    }

    private PublicKey pem(String file, String algorithm) throws Exception {
        String text = Files.readString(keys.resolve(file), StandardCharsets.US_ASCII);
        String b64 = text.replaceAll("-----[A-Z ]+-----", "").replaceAll("\\s", "");
        byte[] der = Base64.getDecoder().decode(b64);
        return KeyFactory.getInstance(algorithm).generatePublic(new X509EncodedKeySpec(der));
    }

    private static byte[] message(String what) {
        return ("p11ha clients suite: " + what + " signed by Java SunPKCS11\n")
                .getBytes(StandardCharsets.US_ASCII);
    }

    /**
     * Signs with the token's key through SunPKCS11, verifies with the PEM's
     * public key through the default providers, and writes OUT/java-NAME.msg
     * and OUT/java-NAME.sig for openssl.
     */
    private void sign(String alg, PSSParameterSpec spec, String alias, String pemFile, String keyAlg,
            String name) throws Exception {
        byte[] msg = message(name);
        Signature signer = Signature.getInstance(alg, p11);
        if (spec != null) {
            signer.setParameter(spec);
        }
        signer.initSign(privateKey(alias));
        require(signer.getProvider() == p11, "signature made by " + signer.getProvider().getName());
        signer.update(msg);
        byte[] sig = signer.sign();

        Signature verifier = Signature.getInstance(alg);
        require(verifier.getProvider() != p11, "verifier is the PKCS#11 provider");
        if (spec != null) {
            verifier.setParameter(spec);
        }
        verifier.initVerify(pem(pemFile, keyAlg));
        verifier.update(msg);
        require(verifier.verify(sig),
                alg + " signature does not verify with " + verifier.getProvider().getName());
        // The same signature must not verify another message.
        verifier.initVerify(pem(pemFile, keyAlg));
        verifier.update(message(name + " (altered)"));
        require(!verifier.verify(sig), alg + " signature verifies a different message");

        Files.write(out.resolve("java-" + name + ".msg"), msg);
        Files.write(out.resolve("java-" + name + ".sig"), sig);
    }

    private SecretKey tokenAes() throws Exception {
        Object key = store().getKey("aes-key", null);
        require(key instanceof SecretKey, "aes-key is not a secret key: " + key);
        return (SecretKey) key;
    }

    private SecretKeySpec rawAes() throws Exception {
        byte[] raw = Files.readAllBytes(keys.resolve("aes.key"));
        require(raw.length == 32, "aes.key holds " + raw.length + " bytes, not 32");
        return new SecretKeySpec(raw, "AES");
    }

    private static byte[] pattern(int n, int seed) {
        byte[] b = new byte[n];
        for (int i = 0; i < n; i++) {
            b[i] = (byte) (i * 7 + seed);
        }
        return b;
    }

    /** AES/CBC/NoPadding, one doFinal, 64 bytes; written as OUT/java-aes-nopad.{in,iv,out}. */
    private void aesNoPadding() throws Exception {
        byte[] iv = pattern(16, 1);
        byte[] data = pattern(64, 3);
        Cipher token = Cipher.getInstance("AES/CBC/NoPadding", p11);
        token.init(Cipher.ENCRYPT_MODE, tokenAes(), new IvParameterSpec(iv));
        byte[] ct = token.doFinal(data);
        require(token.getProvider() == p11, "cipher of " + token.getProvider().getName());

        Cipher jce = Cipher.getInstance("AES/CBC/NoPadding", "SunJCE");
        jce.init(Cipher.ENCRYPT_MODE, rawAes(), new IvParameterSpec(iv));
        byte[] expected = jce.doFinal(data);
        require(Arrays.equals(ct, expected), "ciphertext differs from SunJCE's");

        token.init(Cipher.DECRYPT_MODE, tokenAes(), new IvParameterSpec(iv));
        require(Arrays.equals(token.doFinal(ct), data), "token decryption differs from the plaintext");
        Files.write(out.resolve("java-aes-nopad.in"), data);
        Files.write(out.resolve("java-aes-nopad.iv"), iv);
        Files.write(out.resolve("java-aes-nopad.out"), ct);
    }

    /**
     * AES/CBC/PKCS5Padding in uneven update()s (1000 bytes), and decrypted
     * back; written as OUT/java-aes-pad.{in,iv,out}.
     */
    private void aesPadded() throws Exception {
        byte[] iv = pattern(16, 5);
        byte[] data = pattern(1000, 11);
        int[] cuts = {0, 1, 17, 300, 512, 999, 1000};
        Cipher token = Cipher.getInstance("AES/CBC/PKCS5Padding", p11);
        token.init(Cipher.ENCRYPT_MODE, tokenAes(), new IvParameterSpec(iv));
        ByteArrayOutputStream ct = new ByteArrayOutputStream();
        for (int i = 0; i + 1 < cuts.length; i++) {
            byte[] part = token.update(data, cuts[i], cuts[i + 1] - cuts[i]);
            if (part != null) {
                ct.write(part);
            }
        }
        ct.write(token.doFinal());

        Cipher jce = Cipher.getInstance("AES/CBC/PKCS5Padding", "SunJCE");
        jce.init(Cipher.ENCRYPT_MODE, rawAes(), new IvParameterSpec(iv));
        byte[] expected = jce.doFinal(data);
        require(Arrays.equals(ct.toByteArray(), expected), "ciphertext differs from SunJCE's");

        token.init(Cipher.DECRYPT_MODE, tokenAes(), new IvParameterSpec(iv));
        ByteArrayOutputStream pt = new ByteArrayOutputStream();
        byte[] c = ct.toByteArray();
        for (int off = 0; off < c.length; off += 160) {
            byte[] part = token.update(c, off, Math.min(160, c.length - off));
            if (part != null) {
                pt.write(part);
            }
        }
        pt.write(token.doFinal());
        require(Arrays.equals(pt.toByteArray(), data), "token decryption differs from the plaintext");
        Files.write(out.resolve("java-aes-pad.in"), data);
        Files.write(out.resolve("java-aes-pad.iv"), iv);
        Files.write(out.resolve("java-aes-pad.out"), c);
    }

    private void random() throws Exception {
        SecureRandom r = SecureRandom.getInstance("PKCS11", p11);
        require(r.getProvider() == p11, "SecureRandom of " + r.getProvider().getName());
        byte[] a = new byte[64];
        byte[] b = new byte[64];
        r.nextBytes(a);
        r.nextBytes(b);
        require(!Arrays.equals(a, new byte[64]), "64 random bytes are all zero");
        require(!Arrays.equals(a, b), "two draws of 64 random bytes are equal");
        List<String> hex = new ArrayList<>();
        for (byte[] d : new byte[][] {a, b}) {
            StringBuilder s = new StringBuilder();
            for (byte x : d) {
                s.append(String.format("%02x", x));
            }
            hex.add(s.toString());
        }
        Files.writeString(out.resolve("java-random.txt"), String.join("\n", hex) + "\n");
    }

    // --- keys made in one session, used in others ---------------------------------------
    //
    // SunPKCS11 keeps two pools of sessions (SessionManager): object sessions, which hold
    // the session objects it makes (KeyGenerator, KeyPairGenerator, and C_CreateObject when
    // it imports a software key for an operation), and operation sessions, where a Cipher
    // or Signature runs from its C_*Init to its doFinal/sign/verify. A session that holds
    // an object goes back to the object pool, and getOpSession() opens a new session
    // rather than take one from there, so a key object is used from other sessions than
    // the one that made it. To use it from several sessions for sure, each round below
    // initialises WIDTH Ciphers or Signatures before it finishes any: an initialised
    // operation holds its session, so the WIDTH operations run on WIDTH distinct sessions,
    // none of them the key's. p11ha in WLD and HA mode opens each new session on the
    // member with the fewest sessions, so the operation sessions, opened while the key's
    // session is open, are spread over both members (in this suite the first Cipher.init
    // or Signature.init of round 1 already meets the key on the other member: the key is
    // made in the second session the JVM opens, and that operation runs in the first, the
    // login's; seen with pkcs11-spy). ROUNDS rounds, each with a new key, in whichever
    // object session is free, repeat it; a failure names its round and operation. No
    // threads are needed: which session an operation gets depends on what is open when it
    // starts, not on which thread starts it.

    private static final int ROUNDS = 10;
    private static final int WIDTH = 4;

    private interface Round {
        void run(int round) throws Exception;
    }

    private static void rounds(Round body) throws Exception {
        for (int round = 1; round <= ROUNDS; round++) {
            try {
                body.run(round);
            } catch (Exception | AssertionError e) {
                throw new Exception("round " + round + " of " + ROUNDS + ": " + e, e);
            }
        }
    }

    /** WIDTH token Ciphers, all initialised (each holding a session of its own). */
    private Cipher[] ciphers(String transformation, int mode, Key key, byte[][] ivs)
            throws Exception {
        Cipher[] c = new Cipher[WIDTH];
        for (int i = 0; i < WIDTH; i++) {
            c[i] = Cipher.getInstance(transformation, p11);
            try {
                c[i].init(mode, key, new IvParameterSpec(ivs[i]));
            } catch (Exception e) {
                throw new Exception("Cipher.init of operation " + (i + 1) + " of " + WIDTH
                        + " open at once", e);
            }
            require(c[i].getProvider() == p11, "cipher of " + c[i].getProvider().getName());
        }
        return c;
    }

    /** WIDTH token Signatures, all initialised (each holding a session of its own). */
    private Signature[] signatures(Key key) throws Exception {
        Signature[] s = new Signature[WIDTH];
        for (int i = 0; i < WIDTH; i++) {
            s[i] = Signature.getInstance("SHA256withECDSA", p11);
            try {
                if (key instanceof PrivateKey) {
                    s[i].initSign((PrivateKey) key);
                } else {
                    s[i].initVerify((PublicKey) key);
                }
            } catch (Exception e) {
                throw new Exception("Signature.init" + (key instanceof PrivateKey ? "Sign" : "Verify")
                        + " of operation " + (i + 1) + " of " + WIDTH + " open at once", e);
            }
            require(s[i].getProvider() == p11, "signature of " + s[i].getProvider().getName());
        }
        return s;
    }

    /** WIDTH patterns of n bytes each (grow false) or of n, n + 1, ... bytes (grow true). */
    private static byte[][] patterns(int n, int seed, boolean grow) {
        byte[][] b = new byte[WIDTH][];
        for (int i = 0; i < WIDTH; i++) {
            b[i] = pattern(grow ? n + i : n, seed + 31 * i);
        }
        return b;
    }

    private static String hex(byte[] b) {
        StringBuilder s = new StringBuilder();
        for (byte x : b) {
            s.append(String.format("%02x", x));
        }
        return s.toString();
    }

    private static String pem(PublicKey key) {
        return "-----BEGIN PUBLIC KEY-----\n"
                + Base64.getMimeEncoder(64, new byte[] {'\n'}).encodeToString(key.getEncoded())
                + "\n-----END PUBLIC KEY-----\n";
    }

    /**
     * An AES-128 session key from the token's KeyGenerator (unextractable, as
     * SunPKCS11 asks SoftHSM for it: its value cannot be compared with SunJCE).
     * Per round WIDTH AES/CBC/PKCS5Padding encryptions of the same plaintext under
     * the same IV, open at once: their ciphertexts must be one (one key, whatever
     * session or member encrypts), not the plaintext; then WIDTH decryptions open
     * at once must give the plaintext back.
     */
    private void generatedAes() throws Exception {
        KeyGenerator kg = KeyGenerator.getInstance("AES", p11);
        require(kg.getProvider() == p11, "KeyGenerator of " + kg.getProvider().getName());
        kg.init(128);
        rounds(round -> {
            SecretKey key = kg.generateKey();
            byte[][] ivs = new byte[WIDTH][];
            Arrays.fill(ivs, pattern(16, round));
            byte[] data = pattern(40 + round, 7 * round);
            Cipher[] enc = ciphers("AES/CBC/PKCS5Padding", Cipher.ENCRYPT_MODE, key, ivs);
            byte[] ct = enc[0].doFinal(data);
            require(ct.length == (data.length / 16 + 1) * 16, "ciphertext of " + ct.length + " bytes");
            require(!Arrays.equals(Arrays.copyOf(ct, data.length), data), "ciphertext = plaintext");
            for (int i = 1; i < WIDTH; i++) {
                require(Arrays.equals(enc[i].doFinal(data), ct),
                        "ciphertext " + (i + 1) + " differs from the first");
            }
            Cipher[] dec = ciphers("AES/CBC/PKCS5Padding", Cipher.DECRYPT_MODE, key, ivs);
            for (int i = 0; i < WIDTH; i++) {
                require(Arrays.equals(dec[i].doFinal(ct), data),
                        "decryption " + (i + 1) + " differs from the plaintext");
            }
        });
    }

    /**
     * An EC P-256 session key pair from the token's KeyPairGenerator; per round
     * WIDTH SHA256withECDSA signatures open at once, each verified by SunEC with the
     * public key rebuilt from its encoding (read from the token), and not verifying
     * an altered message. The last round's are written as OUT/java-kpg.{msg,sig}
     * and OUT/java-kpg-pub.pem for openssl.
     */
    private void generatedEc() throws Exception {
        KeyPairGenerator kpg = KeyPairGenerator.getInstance("EC", p11);
        require(kpg.getProvider() == p11, "KeyPairGenerator of " + kpg.getProvider().getName());
        kpg.initialize(new ECGenParameterSpec("secp256r1"));
        rounds(round -> {
            KeyPair pair = kpg.generateKeyPair();
            Signature[] signers = signatures(pair.getPrivate());
            byte[][] msgs = new byte[WIDTH][];
            byte[][] sigs = new byte[WIDTH][];
            for (int i = 0; i < WIDTH; i++) {
                msgs[i] = message("generated EC key, round " + round + ", signature " + (i + 1));
                signers[i].update(msgs[i]);
                sigs[i] = signers[i].sign();
            }
            PublicKey pub = KeyFactory.getInstance("EC", "SunEC")
                    .generatePublic(new X509EncodedKeySpec(pair.getPublic().getEncoded()));
            Signature sunec = Signature.getInstance("SHA256withECDSA", "SunEC");
            for (int i = 0; i < WIDTH; i++) {
                sunec.initVerify(pub);
                sunec.update(msgs[i]);
                require(sunec.verify(sigs[i]), "signature " + (i + 1) + " does not verify with SunEC");
                sunec.initVerify(pub);
                sunec.update(message("altered"));
                require(!sunec.verify(sigs[i]), "signature " + (i + 1) + " verifies an altered message");
            }
            if (round == ROUNDS) {
                Files.write(out.resolve("java-kpg.msg"), msgs[0]);
                Files.write(out.resolve("java-kpg.sig"), sigs[0]);
                Files.writeString(out.resolve("java-kpg-pub.pem"), pem(pub));
            }
        });
    }

    /**
     * A software AES-128 key (SecretKeySpec of fixed bytes, new ones each round),
     * which SunPKCS11 imports with C_CreateObject; per round WIDTH
     * AES/CBC/PKCS5Padding encryptions open at once through the token, each
     * equal to SunJCE's and decrypted back by SunJCE. The last round's are written
     * as OUT/java-soft.{key.hex,iv,in,out} for openssl.
     */
    private void softwareAes() throws Exception {
        rounds(round -> {
            SecretKeySpec key = new SecretKeySpec(pattern(16, 50 + round), "AES");
            byte[][] ivs = patterns(16, 3 * round, false);
            byte[][] data = patterns(33 + round, 5 * round, true);
            Cipher[] enc = ciphers("AES/CBC/PKCS5Padding", Cipher.ENCRYPT_MODE, key, ivs);
            Cipher jce = Cipher.getInstance("AES/CBC/PKCS5Padding", "SunJCE");
            for (int i = 0; i < WIDTH; i++) {
                byte[] ct = enc[i].doFinal(data[i]);
                jce.init(Cipher.DECRYPT_MODE, key, new IvParameterSpec(ivs[i]));
                require(Arrays.equals(jce.doFinal(ct), data[i]),
                        "SunJCE decrypts " + (i + 1) + " differently");
                jce.init(Cipher.ENCRYPT_MODE, key, new IvParameterSpec(ivs[i]));
                require(Arrays.equals(jce.doFinal(data[i]), ct),
                        "ciphertext " + (i + 1) + " differs from SunJCE's");
                if (round == ROUNDS && i == 0) {
                    Files.writeString(out.resolve("java-soft.key.hex"), hex(key.getEncoded()) + "\n");
                    Files.write(out.resolve("java-soft.iv"), ivs[i]);
                    Files.write(out.resolve("java-soft.in"), data[i]);
                    Files.write(out.resolve("java-soft.out"), ct);
                }
            }
        });
    }

    /**
     * A software EC P-256 public key (a SunEC key pair, new each round), which
     * SunPKCS11 imports with C_CreateObject; per round WIDTH SHA256withECDSA
     * verifications open at once through the token of SunEC's signature: each
     * must verify the message, and then (the same Signature, initialised again by
     * the provider) reject an altered one.
     */
    private void softwareEcVerify() throws Exception {
        KeyPairGenerator sw = KeyPairGenerator.getInstance("EC", "SunEC");
        sw.initialize(new ECGenParameterSpec("secp256r1"));
        rounds(round -> {
            KeyPair pair = sw.generateKeyPair();
            byte[] msg = message("software EC key, round " + round);
            Signature sunec = Signature.getInstance("SHA256withECDSA", "SunEC");
            sunec.initSign(pair.getPrivate());
            sunec.update(msg);
            byte[] sig = sunec.sign();
            Signature[] verifiers = signatures(pair.getPublic());
            for (int i = 0; i < WIDTH; i++) {
                verifiers[i].update(msg);
                require(verifiers[i].verify(sig),
                        "verification " + (i + 1) + " rejects SunEC's signature");
            }
            for (int i = 0; i < WIDTH; i++) {
                verifiers[i].update(message("software EC key, round " + round + " (altered)"));
                require(!verifiers[i].verify(sig),
                        "verification " + (i + 1) + " accepts an altered message");
            }
        });
    }
}

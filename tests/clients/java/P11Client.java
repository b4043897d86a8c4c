// P11Client — the Java 17 SunPKCS11 client of the clients suite (scripts/clients.sh).
//
// Usage: java -cp CLASSES P11Client CONFIG KEYS OUT
//   CONFIG  a SunPKCS11 configuration file (name, library, slotListIndex); its
//           ${...} items are Java system properties (-Dp11clients.library=...)
//   KEYS    the mktokens.sh key directory (ec-pub.pem, rsa-pub.pem, aes.key)
//   OUT     a directory for the outputs that clients.sh checks again with openssl
//
// Every case runs in this one JVM (its start is the slow part) and prints
// "pass NAME" or "FAIL NAME: why (cause: the innermost exception)"; the exit
// status is 1 if any case failed.
// Cases: the KeyStore lists the EC and RSA private keys and the AES key;
// SHA256withECDSA, SHA256withRSA and RSASSA-PSS (SHA-256, MGF1 SHA-256, salt
// 32) signatures made by the token, verified here with the public keys read
// from the PEM files through the default providers (SunEC, SunRsaSign), and
// written to OUT for openssl; AES/CBC/NoPadding single-part and
// AES/CBC/PKCS5Padding multi-part with the token's aes-key, compared with
// SunJCE under the raw key bytes of KEYS/aes.key, and written to OUT; and
// the provider's SecureRandom (two draws of 64 bytes, not zero, different).
// No case uses a key made in one session from another session.

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.PublicKey;
import java.security.SecureRandom;
import java.security.Security;
import java.security.Signature;
import java.security.spec.MGF1ParameterSpec;
import java.security.spec.PSSParameterSpec;
import java.security.spec.X509EncodedKeySpec;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.Collections;
import java.util.List;
import javax.crypto.Cipher;
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
        if (args.length != 3) {
            System.err.println("usage: P11Client CONFIG KEYS OUT");
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
}
